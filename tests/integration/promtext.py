"""A strict reader of the Prometheus text exposition format (0.0.4), enough
to validate what pgsweeper writes: every sample belongs to a declared
family, names and labels are well formed, values are numbers."""

import re

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL = r"[a-zA-Z_][a-zA-Z0-9_]*"
VALUE = r'"(?:[^"\\\n]|\\\\|\\"|\\n)*"'
SAMPLE = re.compile(rf"^({NAME})(?:\{{((?:{LABEL}={VALUE})(?:,{LABEL}={VALUE})*)?\}})? (\S+)$")
LABEL_PAIR = re.compile(rf"({LABEL})=({VALUE})")
TYPES = {"counter", "gauge", "histogram", "summary", "untyped"}


def parse(text):
    """{(name, frozenset(labels.items())): float}; raises ValueError on any defect."""
    if not text.endswith("\n"):
        raise ValueError("exposition must end with a newline")
    types, helps, samples = {}, {}, {}
    for n, line in enumerate(text.splitlines(), 1):
        if line.startswith("# HELP "):
            name, _, doc = line[7:].partition(" ")
            if not re.fullmatch(NAME, name) or name in helps:
                raise ValueError(f"line {n}: bad or repeated HELP for {name!r}")
            helps[name] = doc
        elif line.startswith("# TYPE "):
            name, _, kind = line[7:].partition(" ")
            if not re.fullmatch(NAME, name) or kind not in TYPES or name in types:
                raise ValueError(f"line {n}: bad TYPE line {line!r}")
            if any(k[0] == name for k in samples):
                raise ValueError(f"line {n}: TYPE after samples of {name}")
            types[name] = kind
        elif line.startswith("#") or not line.strip():
            continue
        else:
            m = SAMPLE.match(line)
            if not m:
                raise ValueError(f"line {n}: not a sample: {line!r}")
            name, labels_text, value = m.groups()
            if name not in types:
                raise ValueError(f"line {n}: sample of undeclared family {name}")
            if types[name] == "counter" and not name.endswith("_total"):
                raise ValueError(f"line {n}: counter {name} should end in _total")
            labels = {}
            for lm in LABEL_PAIR.finditer(labels_text or ""):
                if lm.group(1) in labels:
                    raise ValueError(f"line {n}: repeated label {lm.group(1)}")
                labels[lm.group(1)] = lm.group(2)[1:-1].replace("\\n", "\n").replace('\\"', '"').replace("\\\\", "\\")
            v = float(value)
            if types[name] == "counter" and v < 0:
                raise ValueError(f"line {n}: negative counter")
            key = (name, frozenset(labels.items()))
            if key in samples:
                raise ValueError(f"line {n}: duplicate sample {line!r}")
            samples[key] = v
    return samples


def value(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())))
