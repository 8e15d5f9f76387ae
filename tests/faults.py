"""Helpers that make real faults for the tests: a full file system."""
import os


def fill(folder, leave: int = 0):
    """Fill the file system holding ``folder`` until fewer than ``leave`` bytes are free."""
    path = os.path.join(folder, ".filler")
    with open(path, "ab", buffering=0) as f:
        block = b"\0" * 4096
        try:
            while os.statvfs(folder).f_bavail * os.statvfs(folder).f_frsize > leave:
                f.write(block)
        except OSError:
            pass
    return path
