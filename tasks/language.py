"""Programming language of a file from its name (extension or well-known filename).

Covers the 18 languages of StarCoder2-3B's training mix (arXiv 2402.19173, The Stack v2 "3B" languages):
Python, Java, C++, C, JavaScript, PHP, C#, Go, TypeScript, SQL, Ruby, Rust, Jupyter Notebook, Scala, Kotlin,
Shell, Dart, Swift, plus a few common data/markup files. Names are lowercase (e.g. "python", "c++", "c#").
Files we cannot name get None; the filter stage then excludes them with reason "unknown-language".
"""
from __future__ import annotations

import posixpath

_EXTENSIONS: dict[str, list[str]] = {
    "python": [".py", ".pyi", ".pyw", ".pyx", ".pxd"],
    "java": [".java"],
    "c++": [".cpp", ".cc", ".cxx", ".c++", ".hpp", ".hh", ".hxx", ".h++", ".ipp", ".tpp", ".inl"],
    "c": [".c", ".h"],  # `.h` is C in The Stack (ambiguous with C++; C is the conservative choice)
    "javascript": [".js", ".mjs", ".cjs", ".jsx"],
    "php": [".php", ".phtml", ".php3", ".php4", ".php5", ".phps"],
    "c#": [".cs", ".csx"],
    "go": [".go"],
    "typescript": [".ts", ".tsx", ".mts", ".cts"],
    "sql": [".sql"],
    "ruby": [".rb", ".rake", ".gemspec", ".rbw"],
    "rust": [".rs"],
    "jupyter notebook": [".ipynb"],
    "scala": [".scala", ".sc"],
    "kotlin": [".kt", ".kts"],
    "shell": [".sh", ".bash", ".zsh", ".ksh", ".fish"],
    "dart": [".dart"],
    "swift": [".swift"],
    # common data / markup / config files
    "json": [".json", ".jsonl", ".geojson"],
    "yaml": [".yaml", ".yml"],
    "markdown": [".md", ".markdown", ".mdx"],
    "toml": [".toml"],
    "restructuredtext": [".rst"],
    "html": [".html", ".htm"],
    "css": [".css", ".scss", ".less"],
    "xml": [".xml", ".xsd", ".xsl"],
    "cmake": [".cmake"],
    "makefile": [".mk", ".mak"],
    "dockerfile": [".dockerfile"],
    "lua": [".lua"],
    "perl": [".pl", ".pm"],
    "r": [".r"],
    "julia": [".jl"],
    "haskell": [".hs"],
}

_FILENAMES: dict[str, str] = {
    "dockerfile": "dockerfile",
    "containerfile": "dockerfile",
    "makefile": "makefile",
    "gnumakefile": "makefile",
    "cmakelists.txt": "cmake",
    "gemfile": "ruby",
    "rakefile": "ruby",
    "podfile": "ruby",
    "vagrantfile": "ruby",
    ".bashrc": "shell",
    ".bash_profile": "shell",
    ".zshrc": "shell",
    ".profile": "shell",
    "pipfile": "toml",
    "sconstruct": "python",
    "sconscript": "python",
}

EXTENSION_TO_LANGUAGE: dict[str, str] = {ext: lang for lang, exts in _EXTENSIONS.items() for ext in exts}
LANGUAGES: list[str] = sorted(_EXTENSIONS)


def detect_language(path: str) -> str | None:
    """Language of `path` by its filename or extension (case-insensitive), or None when unknown.

    >>> detect_language("src/app/main.PY"), detect_language("lib/x.hpp"), detect_language("Dockerfile")
    ('python', 'c++', 'dockerfile')
    """
    name = posixpath.basename(str(path).replace("\\", "/")).lower()
    if name in _FILENAMES:
        return _FILENAMES[name]
    if name.startswith("dockerfile."):
        return "dockerfile"
    dot = name.rfind(".")
    if dot < 0:
        return None
    return EXTENSION_TO_LANGUAGE.get(name[dot:])
