"""Where stages read and write: project paths, atomic writes, a trained family on disk."""
