#!/usr/bin/env python3
"""Keeps the README's per-language snippets identical to the quickstart part of the examples that
the tests run. `--check` fails when they differ; without it the README is rewritten."""
import pathlib
import re
import sys
import textwrap

ROOT = pathlib.Path(__file__).resolve().parent.parent
EXAMPLES = {
    "rust": ("sdk/rust/examples/conformance.rs", "rust"),
    "python": ("sdk/python/examples/conformance.py", "python"),
    "typescript": ("sdk/typescript/examples/conformance.ts", "typescript"),
    "go": ("sdk/go/examples/conformance/main.go", "go"),
}


def quickstart(path: str) -> str:
    text = (ROOT / path).read_text()
    m = re.search(r"\[START quickstart\][^\n]*\n(.*?)\n[^\n]*\[END quickstart\]", text, re.S)
    if not m:
        sys.exit(f"{path}: no [START quickstart] … [END quickstart] block")
    return textwrap.dedent(m.group(1)).strip("\n")


def render(readme: str) -> str:
    for name, (path, lang) in EXAMPLES.items():
        block = f"<!-- snippet:{name} (generated from {path}) -->\n```{lang}\n{quickstart(path)}\n```\n<!-- /snippet:{name} -->"
        pattern = re.compile(rf"<!-- snippet:{name} .*?<!-- /snippet:{name} -->", re.S)
        if not pattern.search(readme):
            sys.exit(f"README.md has no snippet:{name} block")
        readme = pattern.sub(lambda _: block, readme)
    return readme


def main() -> None:
    readme_path = ROOT / "README.md"
    current = readme_path.read_text()
    wanted = render(current)
    if "--check" in sys.argv:
        if current != wanted:
            sys.exit("README.md snippets differ from the examples: run scripts/readme_snippets.py")
        print("README snippets match the examples")
    else:
        readme_path.write_text(wanted)


if __name__ == "__main__":
    main()
