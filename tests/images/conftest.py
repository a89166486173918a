"""make images: the times and sizes the run measured, printed at its end."""
import test_images


def pytest_terminal_summary(terminalreporter):
    if not test_images.MEASURED:
        return
    terminalreporter.write_sep("-", "images: times and sizes")
    for what, value in test_images.MEASURED:
        terminalreporter.write_line("%-62s %s" % (what, value))
