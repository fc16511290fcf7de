package qemuiotests

// The bash iotests of QEMU 7.2 that pass with minivmm as qemu-img/qemu-io,
// per format (70 for -qcow2, 24 for -raw; the README's "QEMU's own
// iotests" says what the others need). A test that starts passing joins
// its list; one leaves it only with a reason in the README.
var qcow2Tests = []string{
	"001", "002", "003", "004", "005", "007", "008", "009", "010", "011",
	"012", "013", "014", "015", "017", "018", "019", "021", "023", "024",
	"025", "027", "031", "032", "033", "034", "035", "036", "037", "038",
	"042", "043", "046", "047", "048", "050", "052", "053", "054", "058",
	"062", "063", "069", "072", "073", "074", "079", "086", "089", "090",
	"097", "104", "105", "107", "111", "115", "121", "138", "159", "170",
	"174", "187", "265", "268", "272", "279", "287", "290", "292",
	"nbd-qemu-allocation",
}

var rawTests = []string{
	"001", "002", "003", "004", "005", "008", "009", "010", "011", "012",
	"021", "025", "032", "033", "048", "052", "063", "086", "101", "104",
	"159", "160", "170", "221",
}
