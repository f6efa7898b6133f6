"""The command-line tools: one module per ``detkit`` subcommand (``detkit/__main__.py`` lists them).

Each module has ``main(argv) -> int`` (the exit status) and runs as a script; the repository's
``tools/<name>.py`` files run these modules.
"""
