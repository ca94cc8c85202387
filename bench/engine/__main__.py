from bench.engine.benchmark import main

main()
