"""Finding the damaged TFRecords file behind a reading error of a dataset, for
the errors of the Dataset classes: which files a ``dataset.as_numpy_iterator()``
reads, which of them is damaged, and one sentence that says so.

TensorFlow is imported only when a file is read.
"""
from __future__ import annotations

import os


def _tf():
    """TensorFlow, imported on first use (it is an optional dependency)."""
    import tensorflow
    return tensorflow


def record_files(iterator) -> list[str]:
    """The TFRecords files a ``dataset.as_numpy_iterator()`` reads, found by walking
    the dataset's inputs (zip, map, skip, take, batch, repeat, …) down to its
    ``tf.data.TFRecordDataset``s; empty when there are none or they cannot be found."""
    dataset = getattr(iterator, "_dataset", None)
    files, stack, seen = [], [dataset] if dataset is not None else [], set()
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        names = getattr(node, "_filenames", None)
        if names is not None and hasattr(names, "as_numpy_iterator"):
            try:
                files.extend(os.fsdecode(name) for name in names.as_numpy_iterator())
            except Exception:  # noqa: BLE001 - a description only; keep looking
                pass
        try:
            stack.extend(node._inputs())
        except Exception:  # noqa: BLE001 - not every dataset lists its inputs
            pass
    return list(dict.fromkeys(files))


def first_damage(path: str) -> str | None:
    """Read every record of one TFRecords file: None if all are readable, else
    TensorFlow's account of the first damaged one (e.g. "corrupted record at 186")."""
    tf = _tf()
    try:
        for _ in tf.data.TFRecordDataset([path]):
            pass
    except tf.errors.OpError as error:
        return _tf_message(error)
    return None


def _tf_message(error) -> str:
    """TensorFlow's error message without its op-name decorations."""
    message = getattr(error, "message", str(error)).split("}}")[-1].split(" [Op:")[0].strip()
    return message.replace("' failed with ", ": ")


def describe_damage(iterator, error) -> str:
    """One sentence for a reading error of ``iterator``: the damaged file(s) it
    reads and what is wrong, or, when no file is damaged, TensorFlow's message and
    the files read."""
    message = _tf_message(error)
    files = record_files(iterator)
    damaged = [(path, first_damage(path)) for path in files if os.path.exists(path)]
    damaged = [(path, what) for path, what in damaged if what is not None]
    missing = [path for path in files if not os.path.exists(path)]
    if damaged:
        return ("the TFRecords file " + "; ".join(f"{path} is damaged ({what})"
                                                   for path, what in damaged)
                + ". Rewrite it (TFRecords.write_record) or leave it out of the dataset.")
    if missing:
        return f"the TFRecords file(s) {', '.join(missing)} do not exist ({message})"
    if files:
        return (f"{message} (TensorFlow), while reading the TFRecords file(s) "
                f"{', '.join(files)}: their records are intact, so check the parser "
                "(input_shape, n_params) the dataset maps them with")
    return f"{message} (TensorFlow)"
