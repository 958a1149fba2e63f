"""A reward module that raises while it is imported (a grader whose data is missing), for the registry tests."""

raise RuntimeError("the grader's tables are missing")
