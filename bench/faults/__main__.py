from bench.faults.benchmark import main

main()
