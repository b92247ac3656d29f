from museforge.cli import app

app()
