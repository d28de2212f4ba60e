from pacs.cli import app

if __name__ == "__main__":  # listener processes re-import this module
    app()
