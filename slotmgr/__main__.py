from slotmgr.cli import main

main()
