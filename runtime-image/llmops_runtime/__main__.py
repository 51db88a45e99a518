from ._entrypoint import main

main()
