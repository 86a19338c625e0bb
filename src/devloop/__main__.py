from devloop.cli import main

main()
