"""Data in: scans read and prepared (scans, volumes, preprocessing), the prepared-data layout and
its official-format records (layout, records, reader), and the training inputs a DataConfig
names (inputs)."""
