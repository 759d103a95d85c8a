"""Raw plate images → crop store: ``python prepare.py input=… plate_map=…`` (see conf/prepare.yaml)."""

from protocell.cli.entry import prepare

if __name__ == "__main__":
    prepare()
