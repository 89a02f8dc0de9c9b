"""Machine plumbing shared by every layer: nothing here knows the encoder, an analysis or a report.

- ``scalars``     integer and float arguments from Python, numpy or torch scalars (``as_int``, ``as_float``)
- ``limits``      what this machine can do (memory, cores, disk), so a count beyond it is refused up front
- ``devices``     which torch devices this machine can use
- ``allocator``   glibc's heap settings that keep freed tensor memory for the next forward pass
- ``processes``   work on a second core in forked children that never outlive their parent
- ``staging``     temporary folders that say who made them, and one writer at a time per folder
- ``quick_exit``  end a command without the garbage collector's teardown walks
- ``cluster``     Ray for populations of independent jobs: start or join a cluster, run tasks, bring
                  files home
- ``reaper``      every process of an embedded Ray instance ends with its driver, even after kill -9
- ``names``       names read from files or returned by workers: one path component before a path
- ``termination`` SIGTERM that unwinds like Ctrl-C (error: terminated, 143), inside Ray's wait too
"""
