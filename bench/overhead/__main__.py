from bench.overhead.benchmark import main

main()
