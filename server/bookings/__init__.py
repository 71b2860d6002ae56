"""Bookings (预约): requests from the public catalog, approval under per-instrument rules, check-in
with the booking code, booked vs measured after the slot, and drafted service records for outside
users with the measured hours and the price-list fee (issue 20)."""
