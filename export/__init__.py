"""hiergen.export"""
