"""Paths handed to TensorFlow's checkpoint functions, which read a path as a glob pattern.

RestoreV2, tf.train.load_checkpoint and CheckpointManager's clean-up look checkpoint files up
with a pattern match, so a run folder named `runs/sifa [1]` finds no checkpoint (`[1]` matches
"1"), and `runs/sifa*` could match another run's files. `for_tensorflow` gives such a path an
alias without pattern characters: a symlink to its folder in a private temporary folder, removed
at exit. `for_people` turns an alias back into the real path for messages.
"""
import atexit
import functools
import os
import pathlib
import shutil
import tempfile

PATTERN_CHARACTERS = frozenset("*?[]")


def has_pattern_characters(path):
    return bool(PATTERN_CHARACTERS & set(str(path)))


@functools.lru_cache(maxsize=1)
def _alias_root():
    root = tempfile.mkdtemp(prefix="sifa_synthmix_paths_")
    atexit.register(shutil.rmtree, root, True)
    if has_pattern_characters(root):
        raise OSError(f"{root}: the temporary folder's path has glob characters (*?[]); set TMPDIR to "
                      "another folder")
    return root


_ALIASES = {}  # alias -> real path: folders, and the prefixes of file names with pattern characters


def _alias_of_folder(folder):
    folder = os.path.realpath(folder)
    for alias, real in _ALIASES.items():
        if real == folder:
            return alias
    alias = os.path.join(_alias_root(), str(len(_ALIASES)))
    os.symlink(folder, alias, target_is_directory=True)
    _ALIASES[alias] = folder
    return alias


def for_tensorflow(path, folder=False):
    """`path` as a string TensorFlow can take as a pattern and still mean this one file (or, with
    folder=True, this folder, which must exist). A path without pattern characters is unchanged.

    For a file, its folder is aliased; a file name with pattern characters (a checkpoint prefix)
    gets a folder of its own holding links to the files that start with it (.index, .data-*)."""
    path = str(path)
    if not has_pattern_characters(path):
        return path
    if folder:
        return _alias_of_folder(path)
    parent, name = os.path.split(os.path.abspath(path))
    if not has_pattern_characters(name):
        return os.path.join(_alias_of_folder(parent), name)
    alias = os.path.join(tempfile.mkdtemp(dir=_alias_root()), "file")
    for entry in pathlib.Path(parent).iterdir():
        if entry.name.startswith(name):
            os.symlink(entry, alias + entry.name[len(name):])
    _ALIASES[alias] = os.path.join(parent, name)
    return alias


def for_people(path):
    """The real path behind a path `for_tensorflow` returned (other paths unchanged)."""
    path = str(path)
    for alias, real in _ALIASES.items():
        if path.startswith(alias) and path[len(alias):len(alias) + 1] in ("", os.sep, "."):
            return real + path[len(alias):]
    return path
