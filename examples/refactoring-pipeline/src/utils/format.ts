export function formatMoney(cents: number): string {
  return `$${(cents / 100).toFixed(2)}`;
}

export function truncate(text: string, max: number): string {
  return text.length <= max ? text : text.slice(0, max - 1) + "…";
}
