from oemkit.cli.app import main

main()
