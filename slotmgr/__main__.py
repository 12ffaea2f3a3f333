from slotmgr.cli.main import main

main()
