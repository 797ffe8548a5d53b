"""Net-30 invoices for accounts billed `invoice`: numbered per year without gaps, paid off-platform, and past due
(suspending the account after its grace) when unpaid past their due date."""
