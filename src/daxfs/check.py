from dataclasses import dataclass, field

@dataclass
class Report:
    ok: bool = True
    errors: list = field(default_factory=list)
    repaired: list = field(default_factory=list)

def check(path, repair=False):
    raise NotImplementedError

