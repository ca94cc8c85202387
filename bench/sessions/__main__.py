from bench.sessions.benchmark import main

main()
