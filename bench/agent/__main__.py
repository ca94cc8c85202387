from bench.agent.benchmark import main

main()
