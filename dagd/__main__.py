from dagd.cli import main

main()
