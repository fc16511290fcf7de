package vhostuser

// DropConnection closes f's connection as a front end that dies does,
// without a word to the back end (for tests of the back end's side).
func DropConnection(f *Frontend) { f.conn.Close() }
