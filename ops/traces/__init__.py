"""Request traces for ``sluice replay``, and the script that generates the shipped one."""
