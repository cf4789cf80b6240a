"""The `perception` verbs' argument parsing and printing. The library packages (model, runtime,
fusion, sim, ...) hold no command-line code; each module here owns one verb's `main(argv)`."""
