from edgedistill.cli.main import main

main()
