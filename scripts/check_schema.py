"""Validates every config/*.toml against config/graygate.schema.json (the schema the
code generates: `graygate schema`), and checks that the schema refuses every file in
tests/data/schema_invalid/. Exit 1 on any surprise. Run from the repository root:

    python3 scripts/check_schema.py
"""

import glob
import json
import sys
import tomllib

from jsonschema.validators import validator_for


def main():
    with open("config/graygate.schema.json") as f:
        schema = json.load(f)
    # The draft the schema names ($schema).
    cls = validator_for(schema)
    cls.check_schema(schema)
    validator = cls(schema)
    failed = False

    valid = sorted(glob.glob("config/*.toml"))
    for path in valid:
        with open(path, "rb") as f:
            errors = list(validator.iter_errors(tomllib.load(f)))
        for error in errors:
            where = "/".join(str(p) for p in error.absolute_path)
            print(f"{path}: {where}: {error.message}")
            failed = True

    invalid = sorted(glob.glob("tests/data/schema_invalid/*.toml"))
    for path in invalid:
        with open(path, "rb") as f:
            errors = list(validator.iter_errors(tomllib.load(f)))
        if not errors:
            print(f"{path}: the schema accepts a file it must refuse")
            failed = True

    if not valid or not invalid:
        print("no files to check")
        failed = True
    if failed:
        sys.exit(1)
    print(f"schema: {len(valid)} config files valid, {len(invalid)} broken files refused")


if __name__ == "__main__":
    main()
