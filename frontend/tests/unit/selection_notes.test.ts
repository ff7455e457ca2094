import { describe, expect, it } from 'vitest';
import { Float32, Int32, Int64, Table, Utf8, tableFromIPC, tableToIPC, vectorFromArray } from 'apache-arrow';
import { decodeDataMap, parseRegionRule, REGION_RULE_KEY } from '../../src/lib/api';
import { selectionNotes, selectionNotesHelp } from '../../src/lib/format';

const RULE = {
  num_classes: 3, confidence_threshold: 1 / 3, variability_quantile: 2 / 3, variability_cut: 0.125,
  describe: { 'hard-to-learn': 'confidence < 0.33 (= 1/3 classes)' },
};

describe('the data map region rule', () => {
  it('reads the rule from the Arrow schema metadata', () => {
    const t = new Table({
      id: vectorFromArray([1n], new Int64()), confidence: vectorFromArray([0.4], new Float32()),
      variability: vectorFromArray([0], new Float32()), correctness: vectorFromArray([1], new Float32()),
      region: vectorFromArray(['easy-to-learn'], new Utf8()), probe_row: vectorFromArray([-1], new Int32()),
    });
    t.schema.metadata.set(REGION_RULE_KEY, JSON.stringify(RULE));
    const d = decodeDataMap(tableFromIPC(tableToIPC(t, 'stream')));
    expect(d.rule?.num_classes).toBe(3);
    expect(d.rule?.confidence_threshold).toBeCloseTo(0.3333, 4);
    expect(d.rule?.describe['hard-to-learn']).toBe('confidence < 0.33 (= 1/3 classes)');
  });

  it('gives null for a missing or malformed rule', () => {
    expect(parseRegionRule(null)).toBeNull();
    expect(parseRegionRule('not json')).toBeNull();
    expect(parseRegionRule(JSON.stringify({ ...RULE, variability_cut: 'x' }))).toBeNull();
    expect(parseRegionRule(JSON.stringify({ ...RULE, describe: { a: 1 } }))?.describe).toEqual({});
  });
});

describe('what a selection holds, in words', () => {
  it('names the examples not probed and without text', () => {
    expect(selectionNotes({ not_probed: 140, without_text: 140, unknown: 0 })).toEqual(['140 not probed', '140 without text']);
    expect(selectionNotes({ not_probed: 8, without_text: 0, unknown: 2 })).toEqual(['8 not probed', '2 unknown to this run']);
    expect(selectionNotes({ not_probed: 0, without_text: 0, unknown: 0 })).toEqual([]);
    expect(selectionNotes(null)).toEqual([]);
  });

  it('says how to give the missing texts', () => {
    expect(selectionNotesHelp({ not_probed: 3, without_text: 3 })).toContain('Recorder.add_examples');
    expect(selectionNotesHelp({ not_probed: 3, without_text: 0 })).not.toContain('add_examples');
    expect(selectionNotesHelp(null)).toBe('');
  });
});
