"""The registry people maintain: instruments' national-platform fields, exemptions, price lists,
service records and cases, and spreadsheet import."""
