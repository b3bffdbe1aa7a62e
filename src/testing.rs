//! Oracles shared by fuzz targets and the regression replay test.
