"""A stand-in for ``cupy.cuda``, so that the CUDA-graph recorder's own logic runs on a machine without a GPU."""

import contextlib


class FakeCuda:
    """Just enough of ``cupy.cuda`` for RecordedStep's own logic to run on the CPU. NumPy cannot record work, so
    a "capture" runs the step and then puts its state back (a real capture executes nothing), and the graph it
    returns runs ``replay`` (by default the step again) at each launch."""

    def __init__(self):
        fake = self

        class Stream:
            def __init__(self, non_blocking=False):
                pass

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                return False

            def synchronize(self):
                pass

            def record(self):
                return None

            def wait_event(self, event):
                pass

            def begin_capture(self):
                fake.captures += 1
                self.saved = {name: array.copy() for name, array in fake.state().items()}

            def end_capture(self):
                for name, array in fake.state().items():
                    array[...] = self.saved[name]
                return Graph(fake.replay or fake.step)

        class Graph:
            def __init__(self, run):
                self.run = run

            def upload(self, stream):
                pass

            def launch(self, stream):
                fake.launches += 1
                self.run()

        class MemoryPool:
            def malloc(self, size):
                raise AssertionError("NumPy allocates by itself")

        self.Stream, self.Graph, self.MemoryPool = Stream, Graph, MemoryPool
        self.captures = self.launches = 0
        self.replay = None
        self.get_current_stream = Stream
        self.using_allocator = lambda malloc: contextlib.nullcontext()
