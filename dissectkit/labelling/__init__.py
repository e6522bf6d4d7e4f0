"""The labelling maths: the evidence a method reads and the labels it returns, streamed activation
statistics, measures of labels and label quality without ground truth."""
