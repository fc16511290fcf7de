// Package bench holds minivmm's benchmarks. Figures are read as ratios
// against a baseline measured in the same run (the machine is small and
// noisy), never as absolute times: run
//
//	go test -run=NONE -bench=. -count=10 ./bench/ | tee new.txt
//	benchstat new.txt
package bench
