"""``biotrove report``: the data of a self-contained HTML report, computed (the page itself is
drawn by ``output/report``). sources.py reads and recognises the inputs, build.py turns them
into sections: gallery.py (classify results), evaluation.py (eval results), training.py (run
folders), all made of the plain figures and tables of figures.py."""
