"""Benchmarks: programs that own their process, so they keep freed CPU memory as the chapter's commands do.

Every contender, minigrad's and the hand-written floor alike, runs with the same allocator settings.
"""

from minigrad import allocator

allocator.keep_freed_memory()
