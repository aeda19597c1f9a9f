"""hiergen.calibration"""
