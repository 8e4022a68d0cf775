from .cli import main

# Guarded: the web page's worker processes (multiprocessing's spawn) import this module.
if __name__ == "__main__":
    main()
