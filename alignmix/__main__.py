from alignmix.cli import app

app(prog_name="alignmix")
