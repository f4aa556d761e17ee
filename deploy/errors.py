"""The local stack's one error: something an operator must fix, said plainly."""


class StackError(RuntimeError):
    """The stack cannot start or stop; the message says what to do next."""
