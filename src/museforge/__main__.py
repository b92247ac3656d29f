from museforge.cli_entry import main

main()
