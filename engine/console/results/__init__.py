"""What jobs leave behind and take in: zips, merged models, generations, uploaded datasets."""
