from dagd.cli.main import main

main()
