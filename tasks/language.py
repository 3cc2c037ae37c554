"""Programming language of a file from its name (extension or well-known filename).

Covers the 18 languages of Arctic-SnowCoder's mix, "similar to StarCoder2-3B" (arXiv 2409.02326 §2.1; The Stack v2
"3B" languages): Python, Java, C++, C, JavaScript, PHP, C#, Go, TypeScript, SQL, Ruby, Rust, Jupyter Notebook,
Scala, Kotlin, Shell, Dart, Swift (`STARCODER2_3B_LANGUAGES`), plus other common languages and the data / markup /
build files that code repositories carry. Names are lowercase (e.g. "python", "c++", "c#"), following GitHub
linguist's names where there is one.

Files we cannot name get None; the filter stage counts them as "unknown" and keeps them unless
`FilterConfig.keep_languages` asks for a list. The table is configurable: `FilterConfig.language_overrides` maps an
extension (".h") or a file name ("BUILD") to a language, or to None to make it unknown (`detect_language(path,
overrides)`).
"""
from __future__ import annotations

import posixpath
from typing import Mapping

STARCODER2_3B_LANGUAGES = (
    "python", "java", "c++", "c", "javascript", "php", "c#", "go", "typescript", "sql", "ruby", "rust",
    "jupyter notebook", "scala", "kotlin", "shell", "dart", "swift",
)

_EXTENSIONS: dict[str, list[str]] = {
    # the 18 languages of the StarCoder2-3B-style mix
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
    # other programming languages
    "lua": [".lua"],
    "r": [".r"],
    "julia": [".jl"],
    "perl": [".pl", ".pm"],
    "haskell": [".hs"],
    "objective-c": [".m"],
    "objective-c++": [".mm"],
    "cuda": [".cu", ".cuh"],
    "groovy": [".groovy", ".gradle"],
    "elixir": [".ex", ".exs"],
    "erlang": [".erl", ".hrl"],
    "clojure": [".clj", ".cljs", ".cljc"],
    "ocaml": [".ml", ".mli"],
    "f#": [".fs", ".fsi", ".fsx"],
    "fortran": [".f90", ".f95", ".f03", ".f08"],
    "zig": [".zig"],
    "nim": [".nim"],
    "powershell": [".ps1", ".psm1"],
    "batchfile": [".bat", ".cmd"],
    "assembly": [".asm", ".s"],
    "vue": [".vue"],
    "protocol buffer": [".proto"],
    # data / markup / config / build files
    "json": [".json", ".jsonl", ".geojson"],
    "yaml": [".yaml", ".yml"],
    "markdown": [".md", ".markdown", ".mdx"],
    "toml": [".toml"],
    "ini": [".ini", ".cfg"],
    "restructuredtext": [".rst"],
    "tex": [".tex"],
    "html": [".html", ".htm"],
    "css": [".css", ".scss", ".less"],
    "xml": [".xml", ".xsd", ".xsl"],
    "web ontology language": [".owl"],
    "graphviz (dot)": [".dot", ".gv"],
    "cmake": [".cmake"],
    "makefile": [".mk", ".mak"],
    "dockerfile": [".dockerfile"],
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
    "jenkinsfile": "groovy",
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
UNKNOWN = "unknown"  # how stats name files without a language


def detect_language(path: str, overrides: Mapping[str, str | None] | None = None) -> str | None:
    """Language of `path` by its filename or extension (case-insensitive), or None when unknown.

    `overrides`: extension (".h") or file name ("BUILD") -> language (None: unknown), checked before the default
    table (a file name before an extension).

    >>> detect_language("src/app/main.PY"), detect_language("lib/x.hpp"), detect_language("Dockerfile")
    ('python', 'c++', 'dockerfile')
    >>> detect_language("include/x.h", {".h": "c++"}), detect_language("BUILD", {"BUILD": "starlark"})
    ('c++', 'starlark')
    """
    name = posixpath.basename(str(path).replace("\\", "/")).lower()
    dot = name.rfind(".")
    ext = name[dot:] if dot >= 0 else None
    if overrides:
        table = {str(k).lower(): (v.lower() if isinstance(v, str) else None) for k, v in overrides.items()}
        if name in table:
            return table[name]
        if ext is not None and ext in table:
            return table[ext]
    if name in _FILENAMES:
        return _FILENAMES[name]
    if name.startswith("dockerfile."):
        return "dockerfile"
    if ext is None:
        return None
    return EXTENSION_TO_LANGUAGE.get(ext)


def normalise_language(language: object) -> str | None:
    """A language label as the stages use it: lowercase and stripped; None for missing labels (None, NaN, '')."""
    if not isinstance(language, str):
        return None
    language = language.strip().lower()
    return language or None
