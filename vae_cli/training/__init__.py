"""The training loop (phase, epoch, batch), the step, Adam, the stacked models, their state and
checkpointer, the clock, statistics, random streams and signals."""
