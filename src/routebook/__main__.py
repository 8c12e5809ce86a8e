from routebook.cli import main

main()
