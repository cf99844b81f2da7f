from alignmix.cli import main

main()
