export function formatMoney(cents: number): string {
  return "$" + (cents / 100).toFixed(2);
}

export function isoDay(date: Date): string {
  return date.toISOString().slice(0, 10);
}
