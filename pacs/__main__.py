from pacs.cli import app

app()
